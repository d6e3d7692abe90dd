"""raftkube.scheduler"""
