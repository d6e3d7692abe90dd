"""raftkube.store"""
