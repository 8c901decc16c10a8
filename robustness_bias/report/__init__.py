"""Tables and figures from saved audit records."""
