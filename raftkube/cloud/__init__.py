"""raftkube.cloud"""
