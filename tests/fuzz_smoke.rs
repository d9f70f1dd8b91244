//! Smoke run of the fuzz targets in the suite: each body of `pgcast::fuzz_entry` runs over its
//! seed corpus (`fuzz/seeds/<target>/`) and a fixed number of deterministic mutations of it
//! (bit flips, byte writes, truncations, insertions, removals, duplicated ranges, splices).
//! A panic in a decoder, or a broken invariant of a target, fails the test with the input.
//! The long runs are `bench/fuzz` (libFuzzer); this only keeps the bodies honest in every
//! `cargo test`, in a few seconds.

#[path = "fuzz_smoke/seeds.rs"]
mod seeds;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use pgcast::fuzz_entry::TARGETS;
use seeds::Seed;

/// Mutated inputs per target. The classifier gets fewer: sqlparser in a debug build costs
/// far more per input than the binary decoders.
const MUTATIONS: usize = 20_000;
const CLASSIFY_MUTATIONS: usize = 2_000;

/// xorshift64*: deterministic, so a failure here fails the same way on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` for n > 0.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const INTERESTING: [u8; 6] = [0, 1, 0x7f, 0x80, 0xfe, 0xff];

/// One to four mutations of one seed, as libFuzzer's simplest mutators would make them.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => data[rng.below(len)] ^= 1 << rng.below(8),
            1 if len > 0 => data[rng.below(len)] = rng.next() as u8,
            2 if len > 0 => data[rng.below(len)] = INTERESTING[rng.below(INTERESTING.len())],
            3 => data.truncate(rng.below(len + 1)),
            4 => data.insert(rng.below(len + 1), rng.next() as u8),
            5 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(8)).min(len);
                data.drain(at..end);
            }
            6 if len > 0 => {
                let at = rng.below(len);
                let chunk = data[at..(at + 1 + rng.below(16)).min(len)].to_vec();
                let to = rng.below(len + 1);
                data.splice(to..to, chunk);
            }
            7 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ if len >= 2 => {
                // Length fields are where decoders go wrong: write a 16-bit value.
                let at = rng.below(len - 1);
                let value: u16 = match rng.below(4) {
                    0 => 0,
                    1 => u16::MAX,
                    2 => u16::try_from(len).unwrap_or(u16::MAX),
                    _ => rng.next() as u16,
                };
                data[at..at + 2].copy_from_slice(&value.to_be_bytes());
            }
            _ => data.push(rng.next() as u8),
        }
    }
    data
}

/// An input that made a body panic, with the panic's message.
#[derive(Debug)]
struct Failure {
    input: Vec<u8>,
    message: String,
}

fn run_one(body: fn(&[u8]), input: &[u8]) -> Result<(), Failure> {
    catch_unwind(AssertUnwindSafe(|| body(input))).map_err(|panic| Failure {
        input: input.to_vec(),
        message: panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "non-string panic".to_owned()),
    })
}

/// Runs `body` over the seeds, then over `mutations` mutated inputs. Returns how many inputs
/// ran, or the first that failed.
fn smoke(body: fn(&[u8]), seeds: &[Vec<u8>], mutations: usize) -> Result<usize, Failure> {
    for seed in seeds {
        run_one(body, seed)?;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..mutations {
        run_one(body, &mutate(&mut rng, seeds))?;
    }
    Ok(seeds.len() + mutations)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn committed_seeds(target: &str) -> Vec<Seed> {
    let dir = seeds::seed_dir(target);
    let mut out: Vec<Seed> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (FUZZ_SEEDS_WRITE=1 writes it)", dir.display()))
        .map(|entry| {
            let path = entry.expect("seed directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("seed names are UTF-8")
                .to_owned();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn fuzz_targets_survive_seeds_and_mutations() {
    let started = Instant::now();
    for (target, body) in TARGETS {
        let seeds: Vec<Vec<u8>> = committed_seeds(target).into_iter().map(|s| s.1).collect();
        assert!(!seeds.is_empty(), "{target}: no seeds");
        let mutations = if *target == "classify" {
            CLASSIFY_MUTATIONS
        } else {
            MUTATIONS
        };
        let at = Instant::now();
        match smoke(*body, &seeds, mutations) {
            Ok(ran) => eprintln!("{target}: {ran} inputs in {:?}", at.elapsed()),
            Err(f) => panic!(
                "fuzz target {target} panicked: {}\ninput ({} bytes): {}",
                f.message,
                f.input.len(),
                hex(&f.input)
            ),
        }
    }
    eprintln!("all targets in {:?}", started.elapsed());
}

/// The committed seed files are exactly what `seeds.rs` builds from the fixtures, so they
/// cannot go stale. `FUZZ_SEEDS_WRITE=1 cargo test --test fuzz_smoke committed_seeds` rewrites
/// them (alone: the other tests read them).
#[test]
fn committed_seeds_are_built_from_the_fixtures() {
    let write = std::env::var_os("FUZZ_SEEDS_WRITE").is_some();
    for (target, _) in TARGETS {
        let mut built: Vec<Seed> = seeds::seeds(target)
            .into_iter()
            .map(|(name, bytes)| (format!("{name}.bin"), bytes))
            .collect();
        built.sort();
        if write {
            let dir = seeds::seed_dir(target);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create seed directory");
            for (name, bytes) in &built {
                std::fs::write(dir.join(name), bytes).expect("write seed");
            }
        }
        let committed = committed_seeds(target);
        let names = |s: &[Seed]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&committed), names(&built), "{target}: seed files");
        for ((name, on_disk), (_, expected)) in committed.iter().zip(&built) {
            assert!(
                on_disk == expected,
                "{target}/{name} differs from what seeds.rs builds"
            );
        }
    }
}

/// The smoke can fail: a body that panics on any input shorter than three bytes is caught
/// by the mutations (truncation is one of them), with the input that did it.
#[test]
fn smoke_reports_the_input_that_panicked() {
    fn panics_when_short(data: &[u8]) {
        assert!(data.len() >= 3, "short input");
    }
    let seeds = vec![b"0123456789".to_vec(), b"abcdefgh".to_vec()];
    let failure = smoke(panics_when_short, &seeds, 1_000).expect_err("a short input is made");
    assert!(failure.input.len() < 3, "{failure:?}");
    assert!(failure.message.contains("short input"), "{failure:?}");
    assert!(smoke(|_| {}, &seeds, 1_000).is_ok());
}
