"""dualtrack.data"""
