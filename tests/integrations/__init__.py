"""The ecosystem's own clients against a live server: TRL's GRPOTrainer, OpenRLHF's reward fetcher, verl's
classify protocol, the cohere SDK."""
