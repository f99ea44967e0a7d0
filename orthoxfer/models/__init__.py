"""Models: open_clip loading by name, zero-shot heads, and the small CLIPs orthoxfer builds itself."""
