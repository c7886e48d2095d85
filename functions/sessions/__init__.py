"""Session control plane: the session record, its lifecycle, and the Lambda handlers over them."""
