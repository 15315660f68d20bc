//! The closed settings as enums: each variant with the one word the config file uses for it, so
//! a setting is read once and matched exhaustively wherever it matters (no string compared again
//! with a wildcard default).

/// An enum whose variants are spelled in the config file as fixed words.
pub trait Choice: Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
}

macro_rules! choice {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl Choice for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                Choice::as_str(self)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

choice! {
    /// `nonce.store`.
    NonceStoreKind {
        /// This replica, forgotten on restart.
        Memory = "memory",
        /// This replica, kept across restarts.
        File = "file",
        /// Shared by every replica.
        Redis = "redis",
    }
}

choice! {
    /// `nonce.fsync`: when the `file` store flushes to disk.
    FsyncMode {
        Interval = "interval",
        Always = "always",
    }
}

choice! {
    /// `trust.store`.
    TrustStoreKind {
        File = "file",
        Redis = "redis",
    }
}

choice! {
    /// `rate_limit.store`.
    LimitStoreKind {
        Local = "local",
        Redis = "redis",
    }
}

choice! {
    /// `log.level`.
    LogLevel {
        Error = "error",
        Warn = "warn",
        Info = "info",
        Debug = "debug",
        Trace = "trace",
    }
}

choice! {
    /// `log.format`.
    LogFormat {
        Json = "json",
        Text = "text",
    }
}
