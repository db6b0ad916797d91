"""Active Directory-based activation (ADBA), sans-IO: the AD-shaped directory (rootDSE, configuration
partition, msSPP schema), activation objects and their emu-defined licences, and the client's ADBA step.
See docs/adba.md for what is documented, inferred or emu-defined."""
