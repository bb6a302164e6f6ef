#!/usr/bin/perl
#
# gen_analyze_result.pl: synthetic document-analysis results for the benchmarks.
#
# Prints ROWS lines of "id<TAB>json" in COPY text format (backslashes doubled), ids
# FIRST..FIRST+ROWS-1.  Each document is shaped like a Document Intelligence analyze
# result of a one-page invoice: status and timestamps, the page's full text, words with
# eight-number polygons, confidences and spans, lines, and typed fields (string, date,
# currency, number, an array of line items).  About 13 KB of JSON text, varying between
# about 10 and 16 KB.  Every document is different (vendor, customer, amounts, dates, word
# positions and confidences), so that TOAST compression sees what it sees in real use:
# repeated keys, but values that do not repeat between rows.
#
# Deterministic: a row depends only on (SEED, id), whatever FIRST and ROWS are, and on no
# Perl version (a Park-Miller generator of our own, not rand()).
#
# usage: gen_analyze_result.pl [--rows N] [--first ID] [--seed S] [--json]
#   --json prints the documents alone, one per line, without COPY escaping.
# At the end it prints "N documents, B bytes of JSON" (compact, as generated) to stderr.

use strict;
use warnings;
use Getopt::Long;

my ($rows, $first, $seed, $json_only) = (1000, 1, 42, 0);
GetOptions('rows=i' => \$rows, 'first=i' => \$first, 'seed=i' => \$seed,
	'json' => \$json_only)
  or die "usage: $0 [--rows N] [--first ID] [--seed S] [--json]\n";

# Park-Miller minimal standard generator; products stay below 2^47, exact in an IV.
my $state;
sub rnd { $state = ($state * 48271) % 2147483647; return $state; }
sub pick { return $_[ rnd() % @_ ]; }
sub uniform { my ($lo, $hi) = @_; return $lo + ($hi - $lo) * (rnd() / 2147483647); }

my @vendors = ('Contoso Ltd.', 'Fabrikam Inc.', 'Northwind Traders', 'Adventure Works',
	'Tailspin Toys', 'Wingtip Supplies', 'Litware GmbH', 'Proseware SA',
	'Woodgrove Logistics', 'Alpine Ski House', 'Coho Winery', 'Lucerne Publishing',
	'Margie Travel', 'Trey Research', 'Relecloud AG', 'Humongous Insurance');
my @customers = ('Microsoft Finance', 'Blue Yonder Airlines', 'City Power & Light',
	'Consolidated Messenger', 'Graphic Design Institute', 'School of Fine Art',
	'Southridge Video', 'VanArsdel Ltd.', 'Wide World Importers', 'A. Datum Corp.',
	'Best For You Organics', 'Bellows College', 'Fourth Coffee', 'Nod Publishers');
my @streets = ('Main St', 'Oak Avenue', 'Pine Road', 'Harbor Blvd', 'Station Street',
	'Market Square', 'Elm Court', 'Industrial Park', 'Lakeside Drive', 'Hill Lane');
my @cities = ('Redmond, WA 98052', 'Seattle, WA 98101', 'Portland, OR 97201',
	'Berlin 10115', 'Zurich 8001', 'Lyon 69002', 'Denver, CO 80202', 'Austin, TX 78701');
my @items = ('Consulting services', 'Office chairs', 'Laptop docking station',
	'Printer toner cartridge', 'Annual software license', 'Network switch 24-port',
	'Cloud storage 1 TB', 'Standing desk', 'Shipping and handling', 'Installation labour',
	'Monitor 27 inch', 'Ergonomic keyboard', 'Training workshop', 'Support plan (gold)',
	'Paper A4 500 sheets', 'USB-C cable 2 m', 'Server rack 42U', 'Field service visit');
my @notes = ('Thank you for your business.', 'Payment by bank transfer.',
	'Late fee 1.5% per month.', 'Questions? accounts@example.com', 'IBAN DE89 3704 0044 0532');

sub f4 { return sprintf('%.4f', $_[0]); }
sub money { return sprintf('%.2f', $_[0]); }

sub date_str
{
	my ($y, $m, $d) = @_;
	return sprintf('%04d-%02d-%02d', $y, $m, $d);
}

# A JSON string literal; our strings never need more than quote and backslash escaping.
sub js
{
	my $s = shift;
	$s =~ s/(["\\])/\\$1/g;
	$s =~ s/\n/\\n/g;
	return "\"$s\"";
}

sub polygon
{
	my ($x1, $y1, $x2, $y2) = @_;
	my $skew = uniform(-0.004, 0.004);
	return '[' . join(',', f4($x1), f4($y1 + $skew), f4($x2), f4($y1 - $skew),
		f4($x2 + $skew), f4($y2 - $skew), f4($x1 + $skew), f4($y2 + $skew)) . ']';
}

sub document
{
	my $id = shift;
	$state = ($seed * 1000003 + $id * 7919 + 12345) % 2147483646 + 1;
	rnd() for 1 .. 3;

	my $vendor = pick(@vendors);
	my $customer = pick(@customers);
	my ($year, $month, $day) = (2023 + rnd() % 3, 1 + rnd() % 12, 1 + rnd() % 28);
	my $invoice_no = sprintf('INV-%06d', rnd() % 1000000);
	my $nitems = 1 + rnd() % 3;
	my (@lines, @item_rows);
	my $subtotal = 0;

	push @lines, [ 'INVOICE' ], [ $vendor ], [ (rnd() % 999 + 1) . ' ' . pick(@streets) ],
	  [ pick(@cities) ], [ 'Invoice number:', $invoice_no ],
	  [ 'Invoice date:', date_str($year, $month, $day) ],
	  [ 'Due date:', date_str($year, $month % 12 + 1, $day) ],
	  [ 'Bill to:', $customer ], [ 'Description', 'Qty', 'Amount' ];
	for (1 .. $nitems)
	{
		my $desc = pick(@items);
		my $qty = 1 + rnd() % 40;
		my $price = int(uniform(5, 2500) * 100) / 100;
		my $amount = $qty * $price;
		$subtotal += $amount;
		push @item_rows, [ $desc, $qty, $price, $amount, scalar @lines ];
		push @lines, [ $desc, $qty, money($amount) ];
	}
	my $tax = $subtotal * 0.08;
	my $total = $subtotal + $tax;
	push @lines, [ 'Subtotal', money($subtotal) ], [ 'Tax (8%)', money($tax) ],
	  [ 'Total', money($total) ], [ pick(@notes) ];

	# Lay the lines out on an 8.5 x 11 inch page, word by word.
	my (@content, @words_json, @lines_json, @line_geo);
	my $offset = 0;
	my $y = 0.6;
	for my $li (0 .. $#lines)
	{
		my @cells = @{ $lines[$li] };
		my $text = join(' ', @cells);
		my $h = ($li == 0) ? 0.28 : 0.16;
		my $x = ($li >= 4 && $li <= 7) ? 5.1 : 0.6;
		my $line_start = $offset;
		my $lx1 = $x;
		for my $w (split / /, $text)
		{
			my $wlen = length($w);
			my $width = $wlen * ($h * 0.52) + uniform(0, 0.02);
			my $conf = 0.9 + 0.1 * (rnd() / 2147483647);
			push @words_json, '{"content":' . js($w) . ',"polygon":'
			  . polygon($x, $y, $x + $width, $y + $h)
			  . ',"confidence":' . sprintf('%.3f', $conf)
			  . ',"span":{"offset":' . $offset . ',"length":' . $wlen . '}}';
			$x += $width + 0.06;
			$offset += $wlen + 1;
		}
		push @lines_json, '{"content":' . js($text) . ',"polygon":'
		  . polygon($lx1, $y, $x - 0.06, $y + $h)
		  . ',"spans":[{"offset":' . $line_start . ',"length":' . length($text) . '}]}';
		push @line_geo, [ $lx1, $y, $x - 0.06, $y + $h, $line_start, length($text) ];
		push @content, $text;
		$y += $h + uniform(0.12, 0.2);
	}
	my $content = join("\n", @content);

	# Typed fields, each pointing back at the line it was read from.
	my $field = sub {
		my ($type, $value_json, $li, $text) = @_;
		my $g = $line_geo[$li];
		return '{"type":"' . $type . '",' . $value_json . ',"content":' . js($text)
		  . ',"boundingRegions":[{"pageNumber":1,"polygon":' . polygon(@$g[ 0 .. 3 ]) . '}]'
		  . ',"confidence":' . sprintf('%.3f', 0.85 + 0.15 * (rnd() / 2147483647))
		  . ',"spans":[{"offset":' . $g->[4] . ',"length":' . $g->[5] . '}]}';
	};
	my $currency = sub {
		return '"valueCurrency":{"currencySymbol":"$","amount":' . money($_[0])
		  . ',"currencyCode":"USD"}';
	};
	my @fields = (
		'"VendorName":' . $field->('string', '"valueString":' . js($vendor), 1, $vendor),
		'"VendorAddress":' . $field->('address',
			'"valueAddress":{"streetAddress":' . js($lines[2][0]) . ',"city":'
			  . js((split /,| /, $lines[3][0])[0]) . '}', 2, $lines[2][0]),
		'"InvoiceId":' . $field->('string', '"valueString":' . js($invoice_no), 4, $invoice_no),
		'"InvoiceDate":' . $field->('date', '"valueDate":"' . date_str($year, $month, $day) . '"',
			5, $lines[5][1]),
		'"DueDate":' . $field->('date', '"valueDate":"' . $lines[6][1] . '"', 6, $lines[6][1]),
		'"CustomerName":' . $field->('string', '"valueString":' . js($customer), 7, $customer),
	);
	my @item_json;
	for my $it (@item_rows)
	{
		my ($desc, $qty, $price, $amount, $li) = @$it;
		push @item_json, '{"type":"object","valueObject":{'
		  . '"Description":' . $field->('string', '"valueString":' . js($desc), $li, $desc)
		  . ',"Quantity":' . $field->('number', '"valueNumber":' . $qty, $li, $qty)
		  . ',"Amount":' . $field->('currency', $currency->($amount), $li, money($amount))
		  . '},"confidence":' . sprintf('%.3f', 0.8 + 0.2 * (rnd() / 2147483647)) . '}';
	}
	my $nl = scalar @lines;
	push @fields, '"Items":{"type":"array","valueArray":[' . join(',', @item_json) . ']}',
	  '"SubTotal":' . $field->('currency', $currency->($subtotal), $nl - 5, money($subtotal)),
	  '"TotalTax":' . $field->('currency', $currency->($tax), $nl - 4, money($tax)),
	  '"InvoiceTotal":' . $field->('currency', $currency->($total), $nl - 3, money($total));

	my $ts = sprintf('%sT%02d:%02d:%02dZ', date_str($year, $month, $day),
		rnd() % 24, rnd() % 60, rnd() % 60);
	return '{"status":"succeeded","createdDateTime":"' . $ts . '","lastUpdatedDateTime":"' . $ts
	  . '","analyzeResult":{"apiVersion":"2024-11-30","modelId":"prebuilt-invoice",'
	  . '"stringIndexType":"textElements","content":' . js($content) . ','
	  . '"pages":[{"pageNumber":1,"angle":' . sprintf('%.4f', uniform(-0.5, 0.5))
	  . ',"width":8.5,"height":11,"unit":"inch","words":[' . join(',', @words_json) . '],'
	  . '"lines":[' . join(',', @lines_json) . '],"spans":[{"offset":0,"length":'
	  . length($content) . '}]}],"styles":[],'
	  . '"documents":[{"docType":"invoice","boundingRegions":[{"pageNumber":1,'
	  . '"polygon":[0,0,8.5,0,8.5,11,0,11]}],"fields":{' . join(',', @fields) . '},'
	  . '"confidence":' . sprintf('%.3f', 0.9 + 0.1 * (rnd() / 2147483647))
	  . ',"spans":[{"offset":0,"length":' . length($content) . '}]}]}}';
}

binmode STDOUT;
my $bytes = 0;
for my $id ($first .. $first + $rows - 1)
{
	my $doc = document($id);
	$bytes += length($doc);
	# The content's newlines are JSON escapes ("\n"): in COPY text format a backslash
	# must be doubled.
	if ($json_only)
	{
		print $doc, "\n";
	}
	else
	{
		$doc =~ s/\\/\\\\/g;
		print $id, "\t", $doc, "\n";
	}
}
print STDERR "gen_analyze_result.pl: $rows documents, $bytes bytes of JSON\n";
