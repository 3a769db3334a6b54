"""Fuzzing the running API with schemathesis (`make fuzz`), and the server it runs against."""
