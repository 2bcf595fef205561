"""dualtrack.reconstruction"""
