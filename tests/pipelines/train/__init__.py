"""Tests of the training and evaluation stage."""
