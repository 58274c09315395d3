"""The worker node side: contextualisation (cloud-init user data)."""
