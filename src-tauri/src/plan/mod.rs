//! Pure decisions (placement, deploy and rolling-update plans, impact). Arrive with units.
