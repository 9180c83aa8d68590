"""A fake nerdctl executable (``nerdctl``) and its controls (``fake_nerdctl``)."""
