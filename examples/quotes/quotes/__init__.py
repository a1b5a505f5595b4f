"""A tiny service that uses tasker-resilience, and its tests."""
