//! The trainer's earlier recipe choices that `rush bench recipe --ablate` may restore, named once for both sides of the
//! process boundary: `rush` checks the names and passes them in `RUSH_RECIPE_ABLATE`; `rush-train` parses the same list.
//!
//! - `byte-augment`: augmentation on bytes, rounded after each stage, instead of on floats;
//! - `imagenet-norm`: inputs normalised by ImageNet's statistics instead of the training split's;
//! - `tch-init`: tch's default layer init (Kaiming-uniform with fan_in) instead of the PyTorch model's each mirrors.
//!
//! Unset or empty: today's recipe. The spec never sees these; they exist to show, in BENCHMARKS.md, what each change
//! was worth.

/// The environment variable `rush bench recipe` sets for its `rush train` and `rush infer` children.
pub const ABLATE_ENV: &str = "RUSH_RECIPE_ABLATE";

/// Every name, in the order [`Ablate::names`] writes them (sorted, as the benchmark's result keys have them).
pub const ABLATIONS: [&str; 3] = ["byte-augment", "imagenet-norm", "tch-init"];

/// A name that is not one of [`ABLATIONS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown recipe choice {name:?}; one of {list}", name = .0, list = ABLATIONS.join(", "))]
pub struct UnknownChoice(pub String);

/// Which earlier choices are restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ablate {
    pub byte_augment: bool,
    pub imagenet_norm: bool,
    pub tch_init: bool,
}

impl Ablate {
    /// Parses a comma-separated list (blanks and repeats allowed); an unknown name is an error naming it.
    pub fn parse(text: &str) -> Result<Self, UnknownChoice> {
        let mut out = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "byte-augment" => out.byte_augment = true,
                "imagenet-norm" => out.imagenet_norm = true,
                "tch-init" => out.tch_init = true,
                other => return Err(UnknownChoice(other.to_string())),
            }
        }
        Ok(out)
    }

    /// The names restored, in [`ABLATIONS`] order; empty for today's recipe.
    pub fn names(&self) -> Vec<&'static str> {
        [self.byte_augment, self.imagenet_norm, self.tch_init]
            .into_iter()
            .zip(ABLATIONS)
            .filter_map(|(on, name)| on.then_some(name))
            .collect()
    }

    /// The value of [`ABLATE_ENV`] that [`Ablate::parse`] reads back as `self`.
    pub fn to_env(&self) -> String {
        self.names().join(",")
    }

    /// A log line naming what is restored (`None` when nothing is).
    pub fn describe(&self) -> Option<String> {
        let list = self.to_env();
        (!list.is_empty()).then(|| format!("{ABLATE_ENV}={list}: earlier recipe choices restored"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_parses_round_trips_and_an_unknown_name_is_named() {
        assert_eq!(Ablate::parse(""), Ok(Ablate::default()));
        assert_eq!(Ablate::parse(" , "), Ok(Ablate::default()));
        let a = Ablate::parse("tch-init, imagenet-norm,tch-init").unwrap();
        assert!(a.tch_init && a.imagenet_norm && !a.byte_augment);
        assert_eq!(a.names(), ["imagenet-norm", "tch-init"]);
        assert_eq!(Ablate::parse(&a.to_env()), Ok(a));
        assert!(a.describe().unwrap().starts_with("RUSH_RECIPE_ABLATE=imagenet-norm,tch-init: "));
        assert!(Ablate::default().describe().is_none());
        assert_eq!(Ablate::default().to_env(), "");
        let all = Ablate::parse(&ABLATIONS.join(",")).unwrap();
        assert_eq!(all.names(), ABLATIONS);
        let err = Ablate::parse("fp16").unwrap_err();
        assert_eq!(err, UnknownChoice("fp16".into()));
        assert!(err.to_string().contains("\"fp16\"") && err.to_string().contains("tch-init"), "{err}");
    }
}
