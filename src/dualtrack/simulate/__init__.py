"""dualtrack.simulate"""
