"""Site-to-site VPN to the private cloud: AWS side (component), tunnel rules, on-prem render."""
