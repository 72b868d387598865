"""What every cloudland daemon shares: configuration files and structured logs."""
