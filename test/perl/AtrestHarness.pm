
# Copyright: pg_atrest authors; same license as pg_atrest.

=pod

=head1 NAME

AtrestHarness - prove's harness, plus a per-file record of skips for test/sandbox

=head1 SYNOPSIS

  ATREST_TAP_RESULTS=/path/results.tsv prove -I test/perl --harness AtrestHarness test/t/*.pl

=head1 DESCRIPTION

Runs the tests exactly as TAP::Harness does (same output, same exit status) and, when
ATREST_TAP_RESULTS names a file, writes one line per test file to it:

  FILE <TAB> passed|failed|skipped <TAB> TESTS <TAB> SKIPPED <TAB> REASONS

"skipped" is a file that did not fail but skipped all of its tests (skip_all) or some
of them (a SKIP block, "ok N # skip ..."): test/sandbox reports those apart from the
passed ones, because a green run must not claim what it did not check.  SKIPPED is the
number of skipped subtests (0 for skip_all), REASONS the skip reasons, "; "-separated.

=cut

package AtrestHarness;

use strict;
use warnings;

use parent 'TAP::Harness';

sub runtests
{
	my ($self, @tests) = @_;
	my %reasons;

	# Collect each skipped subtest's reason as the parser sees it.
	$self->callback(
		parser_args => sub {
			my ($args, $job) = @_;
			my $desc = $job->[1] // $job->[0];
			$args->{callbacks}{test} = sub {
				my ($result) = @_;
				push @{ $reasons{$desc} }, $result->explanation || 'no reason given'
				  if $result->has_skip;
			};
		});

	my $aggregate = $self->SUPER::runtests(@tests);

	my $out = $ENV{ATREST_TAP_RESULTS};
	if ($out)
	{
		open my $fh, '>', $out or die "could not write $out: $!";
		foreach my $desc ($aggregate->descriptions)
		{
			my ($parser) = $aggregate->parsers($desc);
			my @skipped = $parser->skipped;
			my $skip_all = $parser->skip_all;
			my $status =
			    $parser->has_problems ? 'failed'
			  : ($skip_all || @skipped) ? 'skipped'
			  : 'passed';
			my %seen;
			my @why = grep { !$seen{$_}++ }
			  ($skip_all ? ("skip_all: $skip_all") : ()), @{ $reasons{$desc} // [] };
			my $why = join('; ', @why);
			$why =~ s/[\t\n]+/ /g;
			printf $fh "%s\t%s\t%d\t%d\t%s\n", $desc, $status, scalar($parser->tests_run),
			  scalar(@skipped), $why;
		}
		close $fh or die "could not write $out: $!";
	}
	return $aggregate;
}

1;
