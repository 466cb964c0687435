"""Teacher: replay prompts through a strong model (any litellm provider), ledgered and costed."""
