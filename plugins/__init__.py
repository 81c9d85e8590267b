"""Built-in plugins of the engine (installed as engine_plugins); they use only the public hooks."""
