"""The web console: its rules without a browser (fast), and the tenant journey in a real one."""
