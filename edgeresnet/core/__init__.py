"""What every stage uses: flag limits, atomic writes and staged folders, progress output."""
