"""What every page for people and operators shares: who is signed in, CSRF on forms, flash
messages, the page language, and the stand-alone sign-in page. The interaction, account and
admin packages build their pages on it.
"""
