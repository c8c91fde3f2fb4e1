"""Value types: transactions, blocks, votes, validator sets, hashing, merkle trees and signing."""
