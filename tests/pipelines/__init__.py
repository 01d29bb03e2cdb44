"""Tests of the distributed stages."""
