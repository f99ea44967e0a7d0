"""Reports: result tables (rich, CSV, Markdown, JSON) and plots."""
