//! The trainer's one test binary: the CLI end to end (cli), the SFT step against PyTorch
//! (sft), and the stages as users run them: resume, bad input, the curriculum (stages).
mod cli;
mod sft;
mod stages;
