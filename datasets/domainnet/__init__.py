"""domainnet_continual dataset (DomainNet with a `domain` feature and per-domain splits)."""
