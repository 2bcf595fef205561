"""dualtrack.training"""
