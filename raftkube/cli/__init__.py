"""raftkube.cli"""
