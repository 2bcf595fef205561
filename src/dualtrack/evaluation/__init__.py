"""dualtrack.evaluation"""
