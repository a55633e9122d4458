"""Library code for the BestBox vLLM deploy: configuration, facts, operations and checks."""
