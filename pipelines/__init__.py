"""Distributed stages of the TempMe pipeline, built on Ray Data and Ray Train."""
