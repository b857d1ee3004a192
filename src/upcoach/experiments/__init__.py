"""A/B experiments: sticky assignment, exposure and outcome events, statistics, differentially private export."""
