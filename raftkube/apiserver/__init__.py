"""raftkube.apiserver"""
