"""Test doubles: a local fake of the providers' HTTP APIs."""
