"""Record linkage: standardise records, train and run the Splink matcher, cluster persons, resolve in real time."""
