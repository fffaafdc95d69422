"""The composition every family uses: layout, media, image path, adapters, heads, generation."""
