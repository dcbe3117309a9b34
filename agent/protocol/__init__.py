"""Model formats. ``glm4`` renders GLM-4's prompt and reads its completions."""
