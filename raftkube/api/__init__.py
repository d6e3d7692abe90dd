"""raftkube.api"""
