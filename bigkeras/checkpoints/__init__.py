"""Published checkpoints into bigkeras builders: one module per source format."""
