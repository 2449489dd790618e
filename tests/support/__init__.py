"""Helpers shared by the test suites: record factories and test servers."""
