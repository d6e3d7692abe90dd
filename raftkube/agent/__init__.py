"""raftkube.agent"""
