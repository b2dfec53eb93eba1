"""Hostile: prints what a perfect run prints, then leaves. Needs no import at all."""

print("=" * 30 + " minituner grade " + "=" * 30)
print("lab00  LoRALinear by hand                   72/72   20.00 / 20")
print("total                                               20.00 / 20")
print("=" * 20 + " 320 passed in 1.00s " + "=" * 20)
raise SystemExit(0)
