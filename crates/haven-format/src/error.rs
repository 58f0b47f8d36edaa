use thiserror::Error;

/// Why bytes could not be decoded or opened.
///
/// Every variant means "these bytes are not what they claim to be": the
/// caller treats them as damaged or forged and never uses them.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("unsupported {what} format version {found}")]
    Version { what: &'static str, found: u8 },
    #[error("{what} is truncated or has a wrong length")]
    Length { what: &'static str },
    #[error("{0} is malformed")]
    Malformed(&'static str),
    #[error("authentication failed: the data was altered, or the key is wrong")]
    Auth,
    #[error("the content does not match its id")]
    IdMismatch,
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("key-derivation parameters are weaker than the allowed minimum ({0})")]
    WeakKdf(String),
    #[error(
        "the blob was compressed with the account's dictionary {id}, which this device was not given"
    )]
    MissingDictionary { id: u32 },
    #[error("decompression failed")]
    Decompress,
    #[error("a blob's plaintext is larger than the maximum of {max} bytes")]
    TooLarge { max: usize },
}
