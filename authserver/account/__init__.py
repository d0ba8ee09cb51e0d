"""The person's own account page (``/account``): connected apps, activity, password."""
