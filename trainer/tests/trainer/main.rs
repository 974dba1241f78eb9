//! The trainer's one test binary: the CLI end to end (cli), the SFT step against PyTorch
//! (sft), GRPO and rewards against hand-computed values (rl), and the stages as users run
//! them: resume, bad input, the curriculum (stages).
mod cli;
mod rl;
mod sft;
mod stages;
