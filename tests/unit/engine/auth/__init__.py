"""Tests of engine.auth: JWT verification and API keys."""
