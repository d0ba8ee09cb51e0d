"""Sign-in and consent: the person's side of an authorization request."""
