"""HTML reports rendered from result JSON (render.py, templates/)."""
