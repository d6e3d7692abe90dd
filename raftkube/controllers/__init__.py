"""raftkube.controllers"""
