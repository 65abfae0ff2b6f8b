"""The adversarial suite (issue 15): tests written from the rules and the attacks, not from the code's assumptions."""
