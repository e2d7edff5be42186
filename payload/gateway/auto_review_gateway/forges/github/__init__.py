"""GitHub: settings, who the gateway is (token or App), the REST client, the webhooks."""
